"""CIR core library: encoders, Slerp fusion, the shapes world, benchmark formats."""

import logging

__version__ = "0.1.0"

# faiss's loader logs at INFO every instruction set it tries, including the
# ModuleNotFoundError of a build this wheel does not ship (swigfaiss_avx512): noise on every command.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

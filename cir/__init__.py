"""CIR core library: encoders, Slerp fusion, the shapes world, benchmark formats."""

__version__ = "0.1.0"

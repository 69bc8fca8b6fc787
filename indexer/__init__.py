"""The batch indexer: walk a gallery, embed it, publish a versioned FAISS index (`cir index`)."""

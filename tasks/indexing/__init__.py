"""Indexing: chunks and their vectors in a Chroma collection, kept in step with the files.

- :mod:`~tasks.indexing.store`: the :class:`VectorIndex` protocol, hits, and Chroma.
- :mod:`~tasks.indexing.writes`: upserts of a document's chunks, removal of stale ones.
- :mod:`~tasks.indexing.plan`: new / changed / unchanged / removed files, and partitions.
"""

"""The object layer: ``DataObject`` and its writes, relations, dynamics, the transaction builder, schema
records.

Built on the configured context (:mod:`dal.config`) and the model (:mod:`dal.model`); the
query engine (:mod:`dal.query.grammar`) sits on top of it.
"""

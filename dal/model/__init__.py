"""The model: the hybrid metaclass, its ``_meta`` record and registry, reverse accessors, and document
validation.

Above the specs (:mod:`dal.structures`) and the values (:mod:`dal.values`); below everything
that reads or writes objects.
"""

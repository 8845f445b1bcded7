"""Errors raised by dal. Every error derives from :class:`DalError`."""

from __future__ import annotations


class DalError(Exception):
    """Base of every error dal raises."""


class ObjectNotFoundError(DalError, LookupError):
    """No stored object has that guid."""


class InvalidValueError(DalError, TypeError, ValueError):
    """A value does not fit the declared type of a property, relation or dynamic."""


class MissingMandatoryFieldsError(DalError, ValueError):
    """A save was attempted while mandatory fields are unset."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class UniqueConstraintError(DalError, ValueError):
    """Another object already holds that value of a unique property."""


class OneToOneError(UniqueConstraintError):
    """Another object already points at that target through a one-to-one relation.

    A ``UniqueConstraintError``: a one-to-one relation is a unique ``<relation>_guid``.
    """


class ConcurrencyError(DalError):
    """The same field was changed here and in the store, and the save asked to be told."""


class RaceConditionError(DalError):
    """A save kept conflicting with concurrent writers until its retries ran out."""


class LinkedObjectError(DalError):
    """An object cannot be deleted while other objects point at it."""


class InvalidRelationError(DalError):
    """A relation holds something it cannot (several objects behind a one-to-one)."""


class InvalidQueryError(DalError, ValueError):
    """A query names an unknown field or operator, or has the wrong shape."""


class NoSuchFieldError(InvalidQueryError, AttributeError):
    """A query builder path names no field (``Store.kind.cdoe``, ``Store.settings.size``): an
    InvalidQueryError as the grammar's for the same path, and an AttributeError, so ``hasattr`` works."""


class NotAConditionError(InvalidQueryError, TypeError):
    """``Cls.where()``, ``&`` or ``|`` was given something other than a condition (``Cls.field == value``).

    A ``TypeError`` too, as Python's own operators raise for an operand of the wrong type.
    """


class ConfigurationError(DalError, ValueError):
    """A store URL, scheme or option is wrong."""


class NotAHybridError(ConfigurationError, AttributeError):
    """``DataObject``, ``TypedObject`` or an ``abstract=True`` base used as a hybrid (built, queried, its
    model or a field read): it has no ``_meta``. An ``AttributeError`` too, so ``getattr(cls, '_meta',
    None)`` still tells a hybrid from the rest."""


class BackendError(DalError):
    """A store failed or timed out; the driver's error is the ``__cause__``."""


class CommitOutcomeUnknownError(BackendError):
    """A commit was sent but the store's answer was lost: it may or may not have been applied.

    dal tried to learn the outcome until its deadline and could not. Calling ``save()`` again on
    the same object first finds out whether the earlier commit was applied (and does not apply it
    twice); otherwise reload the object and look before retrying.
    """

    def __init__(self, message: str, commit: object = None) -> None:
        super().__init__(message)
        #: what dal needs to learn the outcome later (a ``dal.cache.journal.Uncertain``)
        self.commit = commit


class MirrorError(DalError):
    """A mirrored object's refresh from its remote failed; the remote's error is the ``__cause__``.

    Raised only by ``obj.refresh_info()``: a lazy refresh (the first read of a stale object)
    never raises it, it serves the stored data and records the failure in ``obj.error``.
    """


class ReadOnlyFieldError(DalError, AttributeError):
    """A field only dal writes was assigned (``info``, ``cached_at`` and ``error`` of a mirrored object)."""

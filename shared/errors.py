"""The error hierarchy. Every error names a machine-readable code and whether retrying can help."""

from __future__ import annotations


class DriftloopError(Exception):
    """Root of every error driftloop raises on purpose."""

    code: str = "internal_error"
    retriable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


# --- bad data: the record goes to the dead-letter topic, the service carries on ---------------


class InvalidRecord(DriftloopError):
    """A record that cannot be processed as it is; retrying it will never help."""

    code = "invalid_record"


class DecodeError(InvalidRecord):
    code = "decode_error"


class UnknownSchema(InvalidRecord):
    code = "unknown_schema_id"


class SchemaMismatch(InvalidRecord):
    code = "schema_mismatch"


class MissingField(InvalidRecord):
    code = "missing_field"


class WrongType(InvalidRecord):
    code = "wrong_type"


class NonFiniteNumber(InvalidRecord):
    code = "non_finite_number"


class RecordTooLarge(InvalidRecord):
    code = "record_too_large"


class TooOld(InvalidRecord):
    code = "too_old"


class DuplicateEvent(InvalidRecord):
    code = "duplicate_event"


class FeatureSetMismatch(InvalidRecord):
    code = "feature_set_mismatch"


class ContractViolation(InvalidRecord):
    """A record that breaks a rule of its stream's data contract (DRIFTLOOP_INGESTION_CONTRACT)."""

    code = "contract_violation"


class LabelTaskMismatch(InvalidRecord):
    """A label the model's task cannot learn (a string on a regression, a 2 on a binary task)."""

    code = "label_task_mismatch"


class LearnerFailed(InvalidRecord):
    """One model family raised on an example (a value it cannot take): that family skips the
    example, is counted, and the other families learn it (services/retraining/selection.py)."""

    code = "learner_failed"


class PoisonBatch(InvalidRecord):
    """A whole record batch the consumer cannot decode (a corrupt batch, a codec it lacks):
    dead-lettered by its offset range, and the service moves past it."""

    code = "poison_batch"


class LabelExpired(InvalidRecord):
    """A label that waited past the join TTL for a FeatureVector that never came."""

    code = "label_expired"


# --- models and artifacts -----------------------------------------------------------------------


class ArtifactError(DriftloopError):
    code = "artifact_error"


class ArtifactIntegrityError(ArtifactError):
    """An artifact whose bytes differ from the sha256 in its registry record."""

    code = "artifact_sha256_mismatch"


class ArtifactOutsideStore(ArtifactError):
    code = "artifact_outside_store"


class RegistrySignatureInvalid(DriftloopError):
    """A registry record that is unsigned or wrongly signed while an HMAC key is configured."""

    code = "registry_signature_invalid"


class UnknownModelSpec(DriftloopError):
    code = "unknown_model_spec"


# --- infrastructure: worth retrying -------------------------------------------------------------


class BrokerError(DriftloopError):
    code = "broker_error"
    retriable = True


class BrokerUnavailable(BrokerError):
    code = "broker_unavailable"


class ProduceFailed(BrokerError):
    """Output of a batch was not delivered: nothing of it is committed, the service stops
    and its input is consumed again after the restart."""

    code = "produce_failed"


class TransactionFailed(BrokerError):
    """A batch's transaction did not commit (aborted, or this producer was fenced by a newer
    one with its transactional id): nothing of the batch is visible to read_committed
    readers, and the service stops without committing; its input is redone after the restart."""

    code = "transaction_failed"


# --- HTTP requests: answered with their status and code (shared/http.py) ---------------------


class HttpError(DriftloopError):
    """A request answered with an error: ``status`` is its HTTP status."""

    code = "invalid_request"
    status = 400


class BodyTooLarge(HttpError):
    code = "body_too_large"
    status = 413


class RequestTimeout(HttpError):
    code = "request_timeout"
    status = 408


class PortInUse(DriftloopError):
    code = "port_in_use"


class ConfigError(DriftloopError):
    code = "config_error"


#: Every dead-letter code a service can emit, for docs, dashboards and tests.
DEAD_LETTER_CODES: tuple[str, ...] = tuple(
    cls.code
    for cls in (
        DecodeError,
        UnknownSchema,
        SchemaMismatch,
        MissingField,
        WrongType,
        NonFiniteNumber,
        RecordTooLarge,
        TooOld,
        DuplicateEvent,
        FeatureSetMismatch,
        ContractViolation,
        LabelExpired,
        PoisonBatch,
        LabelTaskMismatch,
        LearnerFailed,
    )
) + ("internal_error",)

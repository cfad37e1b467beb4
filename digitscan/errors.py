"""Every failure a user can cause or meet, one class per kind.

    DigitscanError                 base: the CLI prints the message, never a traceback
    ├── ConfigError                a bad argument or setting
    ├── DataError                  MNIST could not be obtained or read
    │   └── ChecksumError          a file's sha256 is not the pinned one
    ├── CheckpointError            a checkpoint is missing or not ours
    ├── ExportError                the ONNX export or its checks failed
    │   ├── ParityError            ONNX outputs differ from the checkpoint's
    │   └── QuantizationError      the int8 model lost too much accuracy
    ├── ModelError                 the worker's model or card is missing or tampered
    ├── ProviderError              an onnxruntime execution provider is unavailable
    ├── InputError                 a job input (file, folder, archive) is unusable
    ├── BrokerError                Redis cannot be reached or misbehaves
    ├── JobError                   a job id is unknown or a job could not complete
    ├── MalformedMessage           a chunk message that is not ours: logged, dropped, never retried
    └── ImageError                 one image cannot be classified; becomes its error result
        ├── UnsupportedFormat          (each kind's ``kind`` is the prefix of its result's error)
        ├── CorruptImage
        ├── ImageTooLarge
        ├── BlankImage
        ├── UnreadableImage
        ├── ImageTimeout
        ├── CorruptArchive
        ├── EmptyArchive
        ├── DeadLettered           its chunk killed its worker on every delivery
        ├── NotADigit              the cell holds something, but no digit (a letter, a mark)
        └── ProcessingFailed       a bug met on this image: its neighbours are still read

Messages name the bad value, what was expected and what to do.
"""

from __future__ import annotations


class DigitscanError(Exception):
    """Base class: an expected failure with a message meant for people."""


class ConfigError(DigitscanError):
    pass


class DataError(DigitscanError):
    pass


class ChecksumError(DataError):
    pass


class CheckpointError(DigitscanError):
    pass


class ExportError(DigitscanError):
    pass


class ParityError(ExportError):
    pass


class QuantizationError(ExportError):
    pass


class ModelError(DigitscanError):
    pass


class ProviderError(DigitscanError):
    pass


class InputError(DigitscanError):
    pass


class StorageUnreachable(InputError):
    """Object storage behind a URL cannot be used from here (no endpoint, no credentials,
    its fsspec backend not installed): not the object's fault."""


class BrokerError(DigitscanError):
    pass


class JobError(DigitscanError):
    pass


class InputsUnreachable(DigitscanError):
    """A worker cannot see a by-reference input's storage: its fault, not the image's."""


class StoreUnavailable(BrokerError):
    """Redis stayed unreachable (or full) for longer than a chunk may wait for it."""


class MalformedMessage(DigitscanError):
    pass


class ImageError(DigitscanError):
    """One image could not be read; ``kind`` is the short reason put in its result."""

    kind = "bad image"

    def __str__(self) -> str:
        detail = super().__str__()
        return f"{self.kind}: {detail}" if detail else self.kind


class UnsupportedFormat(ImageError):
    kind = "unsupported format"


class CorruptImage(ImageError):
    kind = "corrupt image"


class ImageTooLarge(ImageError):
    kind = "image too large"


class BlankImage(ImageError):
    kind = "no digit found"


class UnreadableImage(ImageError):
    kind = "unreadable file"


class ImageTimeout(ImageError):
    kind = "image took too long"


class CorruptArchive(ImageError):
    kind = "corrupt archive"


class EmptyArchive(ImageError):
    kind = "empty archive"


class ChangedSinceSubmission(ImageError):
    kind = "changed since submission"


class DeadLettered(ImageError):
    kind = "dead-lettered"


class NotADigit(ImageError):
    kind = "not a digit"


class ProcessingFailed(ImageError):
    kind = "could not be processed"

"""Bytes <-> events.

Input is detected record by record (JSON, Avro single-object, Confluent wire format);
output uses the one codec the settings name. Every failure is a ``DecodeError`` with a
reason fit for the dead-letter topic.
"""

from appfirst.codecs.detect import Decoder, Encoder, encoding_of

__all__ = ["Decoder", "Encoder", "encoding_of"]

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reading(_message.Message):
    __slots__ = ("sensor_id", "boot_id", "seq", "payload", "timestamp")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    boot_id: str
    seq: int
    payload: int
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, sensor_id: _Optional[str] = ..., boot_id: _Optional[str] = ..., seq: _Optional[int] = ..., payload: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamReadingsRequest(_message.Message):
    __slots__ = ("readings",)
    READINGS_FIELD_NUMBER: _ClassVar[int]
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    def __init__(self, readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ...) -> None: ...

class StreamReadingsResponse(_message.Message):
    __slots__ = ("stored", "duplicates", "stale", "conflicts")
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    duplicates: int
    stale: int
    conflicts: int
    def __init__(self, stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., stale: _Optional[int] = ..., conflicts: _Optional[int] = ...) -> None: ...

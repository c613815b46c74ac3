import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_UP: _ClassVar[Status]
    STATUS_DOWN: _ClassVar[Status]
STATUS_UNSPECIFIED: Status
STATUS_UP: Status
STATUS_DOWN: Status

class Command(_message.Message):
    __slots__ = ("id", "status", "window_start", "window_end", "issued_at", "origin", "epoch")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: Status
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    issued_at: _timestamp_pb2.Timestamp
    origin: str
    epoch: int
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., origin: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("command_id", "error", "superseded_by_epoch")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_BY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    command_id: int
    error: str
    superseded_by_epoch: int
    def __init__(self, command_id: _Optional[int] = ..., error: _Optional[str] = ..., superseded_by_epoch: _Optional[int] = ...) -> None: ...

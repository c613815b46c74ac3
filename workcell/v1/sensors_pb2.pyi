import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("node", "observed_at", "period", "current_window_start", "runs")
    NODE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    CURRENT_WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    node: str
    observed_at: _timestamp_pb2.Timestamp
    period: _duration_pb2.Duration
    current_window_start: _timestamp_pb2.Timestamp
    runs: _containers.RepeatedCompositeFieldContainer[SensorRun]
    def __init__(self, node: _Optional[str] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., current_window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runs: _Optional[_Iterable[_Union[SensorRun, _Mapping]]] = ...) -> None: ...

class SensorRun(_message.Message):
    __slots__ = ("sensor_id", "boot_id", "first_received_at", "last_received_at", "last_reading_at", "current_window_readings", "last_window_readings", "stored", "stale", "duplicates", "live")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_READING_AT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_WINDOW_READINGS_FIELD_NUMBER: _ClassVar[int]
    LAST_WINDOW_READINGS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    boot_id: str
    first_received_at: _timestamp_pb2.Timestamp
    last_received_at: _timestamp_pb2.Timestamp
    last_reading_at: _timestamp_pb2.Timestamp
    current_window_readings: int
    last_window_readings: int
    stored: int
    stale: int
    duplicates: int
    live: bool
    def __init__(self, sensor_id: _Optional[str] = ..., boot_id: _Optional[str] = ..., first_received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_reading_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_window_readings: _Optional[int] = ..., last_window_readings: _Optional[int] = ..., stored: _Optional[int] = ..., stale: _Optional[int] = ..., duplicates: _Optional[int] = ..., live: _Optional[bool] = ...) -> None: ...

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from workcell.v1 import command_pb2 as _command_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_OUTCOME_UNSPECIFIED: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_SIGNIFICANT: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_NOT_SIGNIFICANT: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_TOO_FEW_READINGS: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_NO_VARIANCE: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_BELOW_MIN_EFFECT: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_UNCONFIRMED: _ClassVar[DecisionOutcome]

class CommandEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_EVENT_KIND_UNSPECIFIED: _ClassVar[CommandEventKind]
    COMMAND_EVENT_KIND_ISSUED: _ClassVar[CommandEventKind]
    COMMAND_EVENT_KIND_ACKNOWLEDGED: _ClassVar[CommandEventKind]
DECISION_OUTCOME_UNSPECIFIED: DecisionOutcome
DECISION_OUTCOME_SIGNIFICANT: DecisionOutcome
DECISION_OUTCOME_NOT_SIGNIFICANT: DecisionOutcome
DECISION_OUTCOME_TOO_FEW_READINGS: DecisionOutcome
DECISION_OUTCOME_NO_VARIANCE: DecisionOutcome
DECISION_OUTCOME_BELOW_MIN_EFFECT: DecisionOutcome
DECISION_OUTCOME_UNCONFIRMED: DecisionOutcome
COMMAND_EVENT_KIND_UNSPECIFIED: CommandEventKind
COMMAND_EVENT_KIND_ISSUED: CommandEventKind
COMMAND_EVENT_KIND_ACKNOWLEDGED: CommandEventKind

class QueryRequest(_message.Message):
    __slots__ = ("from_datetime", "to_datetime", "page_size", "page_token", "merge_runs")
    FROM_DATETIME_FIELD_NUMBER: _ClassVar[int]
    TO_DATETIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MERGE_RUNS_FIELD_NUMBER: _ClassVar[int]
    from_datetime: _timestamp_pb2.Timestamp
    to_datetime: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    merge_runs: bool
    def __init__(self, from_datetime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., to_datetime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., merge_runs: _Optional[bool] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WindowSummary(_message.Message):
    __slots__ = ("count", "mean", "std_dev", "total", "total_sq")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_DEV_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SQ_FIELD_NUMBER: _ClassVar[int]
    count: int
    mean: float
    std_dev: float
    total: str
    total_sq: str
    def __init__(self, count: _Optional[int] = ..., mean: _Optional[float] = ..., std_dev: _Optional[float] = ..., total: _Optional[str] = ..., total_sq: _Optional[str] = ...) -> None: ...

class DecisionPolicy(_message.Message):
    __slots__ = ("alpha", "min_effect", "confirm")
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MIN_EFFECT_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    alpha: float
    min_effect: float
    confirm: int
    def __init__(self, alpha: _Optional[float] = ..., min_effect: _Optional[float] = ..., confirm: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("from_datetime", "to_datetime", "status", "command_id", "issued_at", "acknowledged_at", "window", "previous_window", "p_value", "changed", "command_count", "last_command_id", "difference", "difference_ci_low", "difference_ci_high", "effect_size", "outcome", "policy", "streak_length", "streak_status")
    FROM_DATETIME_FIELD_NUMBER: _ClassVar[int]
    TO_DATETIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_WINDOW_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    EFFECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STREAK_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STREAK_STATUS_FIELD_NUMBER: _ClassVar[int]
    from_datetime: _timestamp_pb2.Timestamp
    to_datetime: _timestamp_pb2.Timestamp
    status: _command_pb2.Status
    command_id: int
    issued_at: _timestamp_pb2.Timestamp
    acknowledged_at: _timestamp_pb2.Timestamp
    window: WindowSummary
    previous_window: WindowSummary
    p_value: float
    changed: bool
    command_count: int
    last_command_id: int
    difference: float
    difference_ci_low: float
    difference_ci_high: float
    effect_size: float
    outcome: DecisionOutcome
    policy: DecisionPolicy
    streak_length: int
    streak_status: _command_pb2.Status
    def __init__(self, from_datetime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., to_datetime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[_command_pb2.Status, str]] = ..., command_id: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window: _Optional[_Union[WindowSummary, _Mapping]] = ..., previous_window: _Optional[_Union[WindowSummary, _Mapping]] = ..., p_value: _Optional[float] = ..., changed: _Optional[bool] = ..., command_count: _Optional[int] = ..., last_command_id: _Optional[int] = ..., difference: _Optional[float] = ..., difference_ci_low: _Optional[float] = ..., difference_ci_high: _Optional[float] = ..., effect_size: _Optional[float] = ..., outcome: _Optional[_Union[DecisionOutcome, str]] = ..., policy: _Optional[_Union[DecisionPolicy, _Mapping]] = ..., streak_length: _Optional[int] = ..., streak_status: _Optional[_Union[_command_pb2.Status, str]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("after_command_id", "acknowledged_through")
    AFTER_COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_THROUGH_FIELD_NUMBER: _ClassVar[int]
    after_command_id: int
    acknowledged_through: int
    def __init__(self, after_command_id: _Optional[int] = ..., acknowledged_through: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("kind", "command", "resume_after_command_id", "resume_acknowledged_through")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_ACKNOWLEDGED_THROUGH_FIELD_NUMBER: _ClassVar[int]
    kind: CommandEventKind
    command: HistoryEntry
    resume_after_command_id: int
    resume_acknowledged_through: int
    def __init__(self, kind: _Optional[_Union[CommandEventKind, str]] = ..., command: _Optional[_Union[HistoryEntry, _Mapping]] = ..., resume_after_command_id: _Optional[int] = ..., resume_acknowledged_through: _Optional[int] = ...) -> None: ...

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetLeadershipRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLeadershipResponse(_message.Message):
    __slots__ = ("node", "leading", "epoch", "leader_node", "leader_address", "lease_expires_at")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LEADING_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    node: str
    leading: bool
    epoch: int
    leader_node: str
    leader_address: str
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, node: _Optional[str] = ..., leading: _Optional[bool] = ..., epoch: _Optional[int] = ..., leader_node: _Optional[str] = ..., leader_address: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

"""Generated protobuf/gRPC code of the control API, version 1 (see control.proto)."""

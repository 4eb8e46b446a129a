#!/usr/bin/env bash
# Regenerate emulator/csmp/csmp_pb2.py(i) from our schema (needs grpcio-tools,
# in the dev extra). The generated module is committed so installs need only
# the protobuf runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iemulator/csmp --python_out=emulator/csmp \
  --pyi_out=emulator/csmp emulator/csmp/csmp.proto

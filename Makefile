# Entry points: `make demo` and `make test` do all set-up on a fresh Debian machine as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PROTO_ROOT := build/protoroot

.PHONY: demo test test-stress proto proto-check lint bootstrap unit integration clean

bootstrap:
	bash deploy/bootstrap.sh

# Generated code lives beside the .proto files; the import path is orch/proto/*.proto, so
# protoc sees the repository through a symlink named orch.
# Only the files that define services get gRPC stubs.
PROTO_SERVICES := ca control dispatcher

proto:
	@mkdir -p $(PROTO_ROOT) && ln -sfn $(CURDIR) $(PROTO_ROOT)/orch
	$(PY) -m grpc_tools.protoc -I $(PROTO_ROOT) --python_out=$(PROTO_ROOT) --pyi_out=$(PROTO_ROOT) \
		$(PROTO_ROOT)/orch/proto/*.proto
	$(PY) -m grpc_tools.protoc -I $(PROTO_ROOT) --grpc_python_out=$(PROTO_ROOT) \
		$(foreach s,$(PROTO_SERVICES),$(PROTO_ROOT)/orch/proto/$(s).proto)

proto-check:
	@tmp=$$(mktemp -d) && mkdir -p $$tmp/orch/proto && cp proto/*.proto $$tmp/orch/proto/ && \
	$(PY) -m grpc_tools.protoc -I $$tmp --python_out=$$tmp --pyi_out=$$tmp $$tmp/orch/proto/*.proto && \
	$(PY) -m grpc_tools.protoc -I $$tmp --grpc_python_out=$$tmp $(foreach s,$(PROTO_SERVICES),$$tmp/orch/proto/$(s).proto) && \
	for f in $$tmp/orch/proto/*_pb2*.py*; do cmp -s $$f proto/$$(basename $$f) || { echo "proto/$$(basename $$f) is stale: run make proto"; rm -rf $$tmp; exit 1; }; done; \
	for f in proto/*_pb2*.py*; do [ -e $$tmp/orch/proto/$$(basename $$f) ] || { echo "$$f is not generated any more: remove it"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "generated protobuf code is current"

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the layering contracts in pyproject.toml

# Every run leaves build/test-results/junit.xml and the 30 slowest durations; a failing
# integration module keeps its cluster's logs under build/test-artifacts (.ci/run tails them).
PYTEST_REPORTS := -ra --durations=30 --junitxml=build/test-results/junit.xml

test: bootstrap
	$(MAKE) proto-check
	$(MAKE) lint
	rm -rf build/test-results build/test-artifacts
	$(VENV)/bin/pytest $(PYTEST_REPORTS)

# The integration tests with both cores kept busy and the tests of each module shuffled:
# flushes out timing assumptions and tests that lean on another test's state.
test-stress: bootstrap
	rm -rf build/test-results build/test-artifacts
	bash tests/stress.sh $(VENV)/bin/pytest $(PYTEST_REPORTS) -m integration -p random_order --random-order-bucket=module

demo: bootstrap
	bash deploy/demo.sh

# Pacer — run `make help` for the targets.

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# First-party plugins shipped in $(BIN)/plugins. Test-only plugins live in internal/testplugins.
PLUGINS   := shell http
CONFIG    ?= examples/pacer.yaml
# The image `make image` builds; its tag is VERSION, the version the binary
# reports (pacer_build_info), e.g. make image VERSION=0.1.0.
IMAGE     ?= ghcr.io/pacerun/pacer
# The Python SDK and its tests use Debian's Python and its packages (make deps), not
# the first python3 on PATH, which may lack them.
PYTHON    ?= /usr/bin/python3
PY_PB     := sdk/python/pacer_sdk/_pb
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/pacer and every first-party plugin into bin/plugins
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pacer ./cmd/pacer
	@$(MAKE) --no-print-directory plugins

.PHONY: plugins
plugins: ## build the first-party plugins into bin/plugins
	@mkdir -p $(BIN)/plugins
	@for p in $(PLUGINS); do \
		echo "$(GO) build -o $(BIN)/plugins/$$p ./plugins/$$p"; \
		$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/plugins/$$p ./plugins/$$p || exit 1; \
	done

.PHONY: run
run: build ## build, then run the example config with an embedded etcd (Ctrl-C stops)
	$(BIN)/pacer run --config $(CONFIG)

.PHONY: deps
deps: ## install the test dependencies that are not Go modules: Debian's prometheus, etcd 3.4 (etcd-server), and python3 with the Python SDK's packages
	@missing=""; \
	command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	[ -x /usr/bin/etcd ] || missing="$$missing etcd-server"; \
	$(PYTHON) -c 'import grpc, google.protobuf, cryptography, grpc_tools' >/dev/null 2>&1 || \
		missing="$$missing python3 python3-grpcio python3-protobuf python3-cryptography python3-grpc-tools"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages the tests need:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or: sudo apt-get install$$missing" >&2; exit 1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

.PHONY: jaeger
jaeger: ## compile the Jaeger used by the trace end-to-end test (tools/jaeger) into Go's build cache
	cd tools/jaeger && $(GO) build -o /dev/null github.com/jaegertracing/jaeger/cmd/jaeger

.PHONY: deploy-tools
deploy-tools: ## compile the tools the deploy/ tests run (promtool 3, helm, kube-score, dashlint, kubecheck) into Go's build cache
	cd tools/prometheus && GOWORK=off $(GO) build -o /dev/null github.com/prometheus/prometheus/cmd/promtool
	cd tools/prometheus && GOWORK=off $(GO) build -o /dev/null ./dashlint
	cd tools/kube && GOWORK=off $(GO) build -o /dev/null helm.sh/helm/v4/cmd/helm
	cd tools/kube && GOWORK=off $(GO) build -o /dev/null ./kubecheck
	cd tools/kubescore && GOWORK=off $(GO) build -o /dev/null github.com/zegl/kube-score/cmd/kube-score

.PHONY: image
image: ## build the container image $(IMAGE):$(VERSION) (deploy/Dockerfile; needs docker)
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

.PHONY: test
test: deps lint jaeger deploy-tools ## vet, gofmt check, then every test (end-to-end included) under the race detector
	$(GO) test -race -count=1 -timeout 12m ./...

.PHONY: test-python
test-python: deps ## only the Python SDK's and the Python example's tests (make test runs them too, through go test)
	cd sdk/python && $(PYTHON) -m unittest discover -s tests -t .
	cd examples/python-plugin && $(PYTHON) -m unittest discover -p 'test_*.py'

.PHONY: test-short
test-short: ## unit tests only (no end-to-end processes)
	$(GO) test -race -short ./...

.PHONY: e2e
e2e: jaeger ## only the end-to-end tests (real pacer processes, real etcd, real plugins, Jaeger)
	$(GO) test -race -count=1 -run 'TestE2E' -v ./cmd/pacer/

.PHONY: chaos
chaos: ## the whole fault suite: real etcd members, replicas and plugins under kill -9, SIGSTOP, partitions, latency, clock jumps (about 8 min)
	$(GO) test -race -count=1 -tags chaos -run Chaos -timeout 30m -v ./cmd/pacer/

.PHONY: bench
bench: ## benchmarks (no race detector); compare runs with benchstat
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./...

# staticcheck is built from the Go module proxy in its own module, tools/staticcheck
# (pinned there, its dependencies kept out of go.mod); `go tool -n` builds it once
# into Go's build cache and prints the binary's path.
.PHONY: lint
lint: ## go.mod tidy, go vet and staticcheck (also the fault suite and the fault-clock build), gofmt
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod or go.sum is not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags chaos,faultclock ./cmd/pacer/ ./runner/...
	@sc=$$(cd tools/staticcheck && GOWORK=off $(GO) tool -n staticcheck) && \
		echo "staticcheck -tags chaos,faultclock ./..." && $$sc -tags chaos,faultclock ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: tools
tools: ## install the code generators (protoc itself: apt-get install protobuf-compiler libprotobuf-dev)
	$(GO) install $(PROTOC_GEN_GO)
	$(GO) install $(PROTOC_GEN_GO_GRPC)

.PHONY: generate
generate: tools generate-python ## regenerate the protobuf code (Go and Python)
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" $(GO) generate ./sdk/pluginv1/

# Messages with protoc (3.21, Debian's protobuf-compiler: the code python3-protobuf 4.21
# loads); services with grpc_tools (python3-grpc-tools), whose absolute import of the
# messages is made relative so that the package needs no top-level "pacer" module.
.PHONY: generate-python
generate-python: ## regenerate the Python SDK's protobuf code (sdk/python/pacer_sdk/_pb)
	protoc -I sdk/pluginv1/proto --python_out=$(PY_PB) pacer/plugin/v1/plugin.proto
	$(PYTHON) -m grpc_tools.protoc -I sdk/pluginv1/proto -I /usr/include --grpc_python_out=$(PY_PB) pacer/plugin/v1/plugin.proto
	sed -i 's/^from pacer\.plugin\.v1 import plugin_pb2 as /from . import plugin_pb2 as /' $(PY_PB)/pacer/plugin/v1/plugin_pb2_grpc.py
	protoc -I sdk/python/proto --python_out=$(PY_PB) pacer_sdk_goplugin.proto

.PHONY: verify
verify: generate ## regenerate and fail if the committed generated code differs
	git diff --exit-code -- sdk/pluginv1/ $(PY_PB)/

.PHONY: clean
clean: ## remove build output and the example's data directory
	rm -rf $(BIN) data

# Latchkey developer commands. `make run` and `make test` are all a new machine needs
# (make test also needs PostgreSQL, Redis, a Redis Cluster and a Redis Sentinel setup
# on 127.0.0.1 and Chromium, see README; `make redis-cluster` and `make redis-sentinel`
# start the last two;
# the browser tests save screenshots of failures under test-output/).
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 20s
LOADFLAGS ?=
SCALEFLAGS ?=

.PHONY: run build test test-short generate check-generate lint bench fuzz migration load redis-cluster redis-sentinel bench-scale

run: ## Build (with progress: the first build takes minutes) and serve on :8080 with an embedded SQLite file (latchkey.db), text logs
	@GO=$(GO) ./scripts/build.sh
	LOG_FORMAT=$${LOG_FORMAT:-text} ./bin/latchkey

build:
	$(GO) build -o bin/latchkey .

test: ## Every test, with the race detector, on SQLite and PostgreSQL and in Chromium; then the memory tests without it
	@mkdir -p test-output
	$(GO) test -race -count=1 -artifacts -outputdir $(CURDIR)/test-output $(PKGS)
	$(GO) test -count=1 -run 'Memory' ./internal/transport/wsgorilla/ ./internal/app/

redis-cluster: ## Start the test Redis Cluster (three masters on 127.0.0.1:7000-7002) unless one answers there
	./scripts/redis-cluster.sh start

redis-sentinel: ## Start the test Redis Sentinel setup (master 6390, replica 6391, sentinel 26390 on 127.0.0.1) unless it answers
	./scripts/redis-sentinel.sh start

generate: ## Regenerate ent, entgql and gqlgen code
	cd ent && $(GO) run -mod=mod entc.go
	$(GO) tool gqlgen generate

check-generate: generate ## Fail when generated code is not what `make generate` writes
	@git diff --exit-code -- ent graph schema go.mod go.sum || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- ent graph schema)" || { git status --porcelain -- ent graph schema; echo "untracked generated files: run make generate and commit"; exit 1; }

lint: ## gofmt, go vet and the floor check (no lower floor imports a higher one)
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 ./internal/archcheck/

bench: ## Go benchmarks
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

fuzz: ## Fuzz the key parser, the verify body reader, the document budget and the GraphQL endpoint
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./internal/domain/keys
	$(GO) test -run '^$$' -fuzz FuzzVerifyBody -fuzztime $(FUZZTIME) ./internal/transport/httpapi
	$(GO) test -run '^$$' -fuzz FuzzAnalyze -fuzztime $(FUZZTIME) ./graph/querybudget
	$(GO) test -run '^$$' -fuzz FuzzGraphQLEndpoint -fuzztime $(FUZZTIME) ./internal/app

migration: ## New versioned migration from the ent schema: make migration NAME=add_x
	$(GO) run ./migrate/gen -name $(NAME)

bench-scale: ## Usage storage at scale on PostgreSQL: 50M stored rows vs 100k, side by side (about 15 minutes, ~20 GB of disk while it runs); SCALEFLAGS="-rows N" for fewer
	$(GO) run ./cmd/benchscale $(SCALEFLAGS)

load: ## Load harness on PostgreSQL + Redis, then side by side with stubs on SQLite and PG + Redis, at saturation and at a fixed rate (3-4 minutes); prints the tables
	$(GO) run ./cmd/loadtest $(LOADFLAGS)

# Front door for day-to-day work; CI runs `bash .ci/run`, which runs `scripts/test`.
.PHONY: help demo test check chaos scenarios bench bench-ingest bench-coldstart bench-span-reads bench-instructions lambda-local check-template deploy fmt lint

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: ## The main job: the whole pipeline locally (moto, both triggers, evaluator, the alert)
	./scripts/demo

test: ## Every check CI runs: fmt, cargo-deny, clippy, all tests
	./scripts/test

check: ## The quick check before a commit: fmt, clippy, unit tests (no moto, no arm64)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --workspace --locked --lib --bins

chaos: ## The pipeline under injected faults and kills (200k records; prints the judgement)
	./scripts/chaos

scenarios: ## The labelled scenario suite (planted scans, look-alikes): the table, recall, false alerts
	@mkdir -p target; status=0; \
	cargo test -p rejectwatch-tests --test scenarios -- --nocapture > target/scenarios.log 2>&1 || status=$$?; \
	grep -E '^\| |^\{"background_alerts"' target/scenarios.log; \
	[ $$status -eq 0 ] || { tail -30 target/scenarios.log; exit $$status; }

bench: ## Throughput and peak RSS of the core on a 1M-record object
	cargo bench -p rejectwatch-tests --bench throughput

bench-ingest: ## DynamoDB requests per 1M records, and RSS ingesting a 75 MB object
	cargo bench -p rejectwatch-tests --bench ingest

bench-coldstart: ## Init time of both functions against a Runtime API stub, and their sizes
	cargo bench -p rejectwatch-tests --bench coldstart

bench-span-reads: ## What the span rules cost the evaluator in DynamoDB reads (core only)
	cargo bench -p rejectwatch-tests --bench span_reads

bench-instructions: ## Instructions per line, inflating alone and end to end (x86_64 and aarch64)
	./scripts/bench-instructions

lambda-local: ## Both functions under cargo lambda watch/invoke against moto, every events/ file
	./scripts/lambda-local

check-template: ## cfn-lint, sam validate, checkov and sam build of template.yaml
	./scripts/check-template

deploy: ## sam build and sam deploy --guided (needs AWS credentials)
	./scripts/setup-tools
	PATH="$(CURDIR)/.venv/bin:$(CURDIR)/.venv-sam/bin:$$PATH" sam build
	PATH="$(CURDIR)/.venv/bin:$(CURDIR)/.venv-sam/bin:$$PATH" sam deploy --guided

fmt: ## Format the code
	cargo fmt --all

lint: ## Clippy with warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings

# bpftune: the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: deps build run test lint bench bench-smoke kernel-matrix kernel-noipv6 kernel-vm clean man deb image package-smoke validate-deploy

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

# Build and run the daemon in the foreground, logging to stderr (Ctrl-C stops it and
# prints the summary).
run: build
	./target/release/bpftune -s

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# Whole test suite: lint, unit tests, root integration tests (real BPF, real traffic in
# network namespaces), benchmark smoke run, and the kernel matrix (the same hooks and a
# subset of the root tests on Debian's 6.1, 6.12 and 5.10 kernels under qemu). Needs root: the root tests are #[ignore]d
# (a plain `cargo test` reports them as ignored) and run here with --include-ignored,
# where they fail ("needs root: ...") unless run as root. --no-fail-fast: every test
# binary runs, so the total .ci/run prints counts everything. A test that lacks an
# environment feature it declares (2 CPUs, IPv6, a cgroup it can create, a tool) calls
# skip! (tests/common/mod.rs), which appends "binary::test: reason" to $(TEST_SKIPS)
# (truncated first); the list is printed at the end (or when cargo test fails), and
# .ci/run's total counts those tests as skipped, not passed.
TEST_SKIPS := $(CURDIR)/target/test-skips.txt
test: build lint
	mkdir -p $(dir $(TEST_SKIPS)) && : >$(TEST_SKIPS)
	BPFTUNE_TEST_SKIPS=$(TEST_SKIPS) $(CARGO) test --release --workspace --no-fail-fast -- --include-ignored --test-threads=1; \
	  rc=$$?; [ $$rc = 0 ] || ./scripts/test-skips.sh list $(TEST_SKIPS); exit $$rc
	$(MAKE) package-smoke
	$(MAKE) validate-deploy
	$(MAKE) bench-smoke
	$(MAKE) reliability-ci
	$(MAKE) kernel-matrix KM_TIMEOUT=600
	$(MAKE) kernel-noipv6
	$(MAKE) kernel-vm
	./scripts/test-skips.sh list $(TEST_SKIPS)

bench: build
	./bench/run.sh

bench-smoke: build
	./bench/run.sh --smoke

# Kernel matrix: proves the BPF hooks attach on more than one kernel. Runs `bpftune -S`,
# a daemon start/netns-churn/stop check and root integration tests natively on the host
# kernel and, under qemu (software emulation), on Debian's 6.1 and 6.12 kernels and
# bullseye's 5.10 (no netns cookies there: namespaces by inode; cgroup programs without
# task helpers) (downloads cached in target/kernel-matrix/cache); prints a "Supported
# kernels" table (target/kernel-matrix/results/kernels.md). Needs root.
KERNELS ?= 6.1,6.12,5.10
KM_TIMEOUT ?= 900
kernel-matrix: build
	./scripts/kernel-matrix-suite.sh ci --kernel $(KERNELS) --timeout $(KM_TIMEOUT)

# A qemu guest booted with ipv6.disable=1 (no IPv6 sysctls anywhere): every tuner
# loads and one line says IPv6 is missing (RELIABILITY.md item 5). Needs root.
kernel-noipv6: build
	./scripts/kernel-matrix-suite.sh noipv6

# The vm tuner's outcome test (tests/vm.rs) in 1 GiB guests of 6.1 and 6.12: it
# squeezes all of memory, so it cannot run on the host. Needs root.
kernel-vm: build
	./scripts/kernel-matrix-suite.sh vm

clean:
	$(CARGO) clean

# Man pages (docs/man/*.8) and shell completions (docs/completions/) from the clap
# definition, the query table and the tuners: run after changing a flag, query or tuner
# and commit the result (xtask/tests/docs.rs fails until then).
man:
	$(CARGO) run --release -p bpftune-docgen -- docs

# Debian package (cargo-deb, installed by scripts/install-deps.sh): target/debian/*.deb
# from the release build (no rebuild).
deb: build
	$(CARGO) deb -p bpftune --no-build

# Container image localhost/bpftune:VERSION, FROM scratch (Containerfile), built offline
# from the release binary and the libraries it links (scripts/image-rootfs.sh).
IMAGE ?= localhost/bpftune:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image: build
	./scripts/image-rootfs.sh target/release/bpftune target/image
	podman build --network=none -f target/image/Containerfile -t $(IMAGE) target/image

# The packaging targets themselves, as an operator runs them (tests/package.rs and
# tests/container.rs build the same artefacts in temporary places and test them in
# depth, including running the image): the .deb is readable, the image builds; it is
# removed after.
package-smoke:
	$(MAKE) deb
	for f in target/debian/bpftune_*.deb; do dpkg-deb --info "$$f" >/dev/null || exit 1; done
	$(MAKE) image
	podman image exists $(IMAGE)
	podman rmi $(IMAGE) >/dev/null

# Kubernetes manifests (deploy/kubernetes/) against the API schemas, offline once the
# kubernetes-validate venv exists (target/deploy-venv).
validate-deploy: deps
	./scripts/validate-deploy.sh

# Reliability suite (RELIABILITY.md): kill -9 anywhere, socket fuzz, soak. Needs root.
# `reliability` runs the full counts (60 crashes, 10^6 requests, a 1-hour soak in a
# qemu guest); `reliability-ci` the socket fuzz with 2 000 requests. The crash (3
# iterations) and soak (60 s) root tests run at their CI counts inside `make test`'s
# cargo test; reliability-ci (about 40 s) runs in `make test`.
.PHONY: reliability reliability-ci
reliability: build
	./reliability/reliability.py all

reliability-ci: build
	./reliability/reliability.py ci

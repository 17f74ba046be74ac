# Sourced by the benchmarks that start llmhub: sets `bin` to the build to measure.
# LLMHUB_BIN=path measures another build (an A/B of build settings) instead of this tree's;
# PROFILE=dist builds and measures the production build (fat LTO, bench/README.md)
# instead of --release.
profile=${PROFILE:-release}
bin=${LLMHUB_BIN:-target/$profile/llmhub}
[ -n "${LLMHUB_BIN:-}" ] || cargo build --profile "$profile" --quiet --bin llmhub

# stembeam: `make demo` and `make test` do all set-up on a fresh clone.
VENV      := .venv
PYTHON    := $(VENV)/bin/python
STAMP     := $(VENV)/.stembeam-installed
SHARED    ?= $(abspath ../shared)
# Beside the reference data (../shared, as CI and stembeam's developers have it) the official
# checkpoints are read from there and nothing is downloaded. On a user's own clone there is no
# ../shared: the first command that needs a model fetches the official release into the cache
# (~/.cache/stembeam/models, its weights checked against their sha256), as `stembeam` does.
ifneq ($(wildcard $(SHARED)/models/spleeter/2stems/model.index),)
export STEMBEAM_MODEL_PATH ?= $(SHARED)/models/spleeter
export STEMBEAM_NO_DOWNLOAD ?= 1
endif

.PHONY: demo model test test-fast test-cli test-browser test-slow bench quality soak evaluate install clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q -c constraints.txt -e ".[evaluate,report,test]"
	command -v ffmpeg >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg; }
	# The report's browser tests drive Debian's chromium (playwright downloads no browser).
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	touch $(STAMP)

# Where the official 2-stems model is (../shared's, the cache's, or downloaded into the cache now).
model: $(STAMP)
	@TF_CPP_MIN_LOG_LEVEL=3 $(PYTHON) -m stembeam.model.resolve spleeter:2stems

demo: model
	$(VENV)/bin/stembeam pipeline --manifest examples/manifest.csv --output demo_output --runner DirectRunner
	@find demo_output/stems demo_output/metadata -type f | sort

# Test files run on TEST_WORKERS processes (pytest-xdist; a file's tests stay in one process, so
# its module fixtures are made once): 10 minutes instead of 16 on 2 cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not browser and not cli" tests

# Whole commands as a user types them (the README's quick start, the first afternoon's failures,
# the console's output, the installed package's script, runs on a fake GCS and Dataflow): about 4
# minutes; CI runs it after `make test`, so that `make test` stays under 15 minutes.
test-cli: $(STAMP)
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "cli and not slow and not browser" tests

# What to run while working (tests marked `fast`: DoFns and PTransforms on Beam's TestPipeline, the
# Python API, pure functions): under 2 minutes on 2 cores. `make test` runs these too.
test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "fast and not slow and not browser" tests

# `stembeam report`'s pages in headless chromium on real outputs (about 3 minutes; CI runs it after `make test`).
test-browser: $(STAMP)
	$(PYTHON) -m pytest -q -m browser tests

test-slow: $(STAMP)
	$(PYTHON) -m pytest -q -m slow tests

# The official graph job, then the pipeline in float32 and in bfloat16, three rounds in turn (ratios
# of the median walls), over the same 10.5 min
# of audio, with each one's ratio and wall-time breakdown; `make bench BENCH_ARGS=` adds the
# --help timings and the --features runs, `BENCH_ARGS="--copies 28"` the 42-minute set.
BENCH_ARGS ?= --copies 7 --rounds 3 --no-help-timings --no-features
bench: $(STAMP)
	$(PYTHON) -m tests.benchmarks.throughput $(BENCH_ARGS)

# float32 against --precision bfloat16 on ../shared's cc0-multitrack songs: SDR table, SNR.
quality: $(STAMP)
	$(PYTHON) -m pytest -q -s -m slow tests/test_precision.py -k quality

soak: $(STAMP)
	$(PYTHON) -m tests.soak

# Table-1 medians of the official 2-stems model on ../shared's three cc0-multitrack songs.
evaluate: $(STAMP)
	$(VENV)/bin/stembeam evaluate --dataset $(SHARED)/audio/cc0-multitrack --output eval_output/soft
	$(VENV)/bin/stembeam evaluate --dataset $(SHARED)/audio/cc0-multitrack --output eval_output/mwf --mwf

clean:
	rm -rf demo_output eval_output separated_audio features_output .pytest_cache

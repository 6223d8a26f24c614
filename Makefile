# Both targets set everything up on a fresh machine: a .venv made with
# `python3 -m venv`, torch pinned to the CPU build, the project installed.
VENV ?= .venv
PY := $(VENV)/bin/python
# pip installs without byte-compiling everything (--no-compile: a third of the
# install time); Python then compiles what is imported, once, where it may
# write bytecode - so these commands allow it even where the environment
# sets PYTHONDONTWRITEBYTECODE.
ENVRUN := env -u PYTHONDONTWRITEBYTECODE
PYRUN := $(ENVRUN) $(PY)
STAMP := $(VENV)/.photocritic-installed

.PHONY: run test bench lite sources tools clean

# Debian's chromium (the web page's browser test) and exiftool (cull's XMP
# sidecars) are installed beside pip (in the background, where we are root
# with apt-get); without them those tests skip and say why. `make tools`
# installs them alone.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@{ $(MAKE) --no-print-directory tools > $(VENV)/tools-install.log 2>&1 & }; \
	$(PY) -m pip install -q --no-compile --disable-pip-version-check torch==2.13.0 && \
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -e '.[test]'; rc=$$?; wait; \
	cat $(VENV)/tools-install.log; exit $$rc
	touch $(STAMP)

tools:
	@if command -v chromium >/dev/null 2>&1 && command -v exiftool >/dev/null 2>&1; then \
	  echo "tools: chromium and exiftool present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    libimage-exiftool-perl >/dev/null; } && echo "tools: installed chromium and exiftool" || \
	  echo "tools: chromium/exiftool could not be installed; their tests will skip"; \
	else echo "tools: as root, apt-get install chromium libimage-exiftool-perl; until then their tests skip"; fi

run: $(STAMP)
	$(ENVRUN) $(VENV)/bin/photocritic score examples --model lite --output results/examples.csv --table

test: $(STAMP)
	$(PYRUN) -m pytest -q

bench: $(STAMP) sources
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/zeroshot.py
	$(PY) benchmarks/robustness.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/learnability.py --n 6000 --finetune-epochs 6
	$(PY) benchmarks/learnability.py --part mmlq --n 2000
	$(PY) benchmarks/learnability.py --part mmlq --n 2000 --key mmlq_trained_on_retrieved \
	  --trained-on-retrieved-k 8 --modes image \
	  "image + retrieved comments (k=8, group_by source, trained on retrieved)"
	$(PY) benchmarks/learnability.py --part mmlq --n 2000 --seed 1 --key mmlq_world1 \
	  --modes image comments image+comments
	$(PY) benchmarks/learnability.py --part mmlq --n 2000 --seed 2 --key mmlq_world2 --trained-on-retrieved-k 8 \
	  --modes image comments image+comments "image + retrieved comments (k=8, group_by source, trained on retrieved)"
	$(PY) benchmarks/learnability.py --part mmlq --n 2000 --seed 1 --key mmlq_trained_on_retrieved_world1 \
	  --trained-on-retrieved-k 8 --modes image \
	  "image + retrieved comments (k=8, group_by source, trained on retrieved)"
	for s in 0 1 2; do $(PY) benchmarks/learnability.py --part mmlq --n 2000 --seed $$s --folds 5 \
	  --train-seeds 1 || exit 1; done
	for s in 0 1 2; do $(PY) benchmarks/learnability.py --part mmlq --n 2000 --seed $$s --folds 5 \
	  --train-seeds 1 --trained-on-retrieved-k 8 --key mmlq_folds_world$${s}_siblings --modes image \
	  "image + retrieved comments (k=8, trained on retrieved, commented test images in the bank)" || exit 1; done
	$(PY) benchmarks/learnability.py --part mmlq --n 2000 --seed 1 --folds 5 --train-seeds 1 \
	  --trained-on-retrieved-k 8 --key mmlq_folds_world1_siblings_source --modes image \
	  "image + retrieved comments (k=8, trained on retrieved from other photos, commented test images in the bank)"
	$(PY) benchmarks/learnability.py --part mmlq --n 2000 --train-seeds 1 --key mmlq_shared_attention \
	  --param shared_self_attention=true
	$(PY) benchmarks/learnability.py --part mmlq --n 2000 --train-seeds 1 --key mmlq_regularised \
	  --param shared_self_attention=true --param lr=1e-4 --param dropout=0.3 --param width=128 \
	  --param weight_decay=0.05
	$(PY) benchmarks/comments.py
	$(PY) benchmarks/comments.py --rows mmlq-minilm,mmlq-mpnet --output benchmarks/results/comments_regularised.json \
	  --param shared_self_attention=true --param lr=1e-4 --param dropout=0.3 --param width=128 \
	  --param weight_decay=0.05
	$(PY) benchmarks/lite_pairs.py
	$(PY) benchmarks/vilap.py --work build/vilap-bench
	$(PY) benchmarks/vilap.py --part quality --work build/vilap-bench --variant same-text-positives \
	  --same-text-positives
	$(PY) benchmarks/vilap.py --part quality --work build/vilap-bench-192 --variant image-192px --image-size 192
	$(PY) benchmarks/multiattr.py --part frozen
	$(PY) benchmarks/multiattr.py --part seeds
	$(PY) benchmarks/multiattr.py --part seeds --affinity 1 --affinity-form neighbours
	$(PY) benchmarks/multiattr.py --part trainable --epochs 4 --n 1500 --affinity 1 --affinity-on features
	$(PY) benchmarks/multiattr.py --part trainable --epochs 4 --n 1500 --without content --affinity 1 \
	  --affinity-on features
	$(PY) benchmarks/multiattr.py --part trainable --epochs 4 --n 1500 --without content --affinity 100 \
	  --affinity-on features
	$(PY) benchmarks/multiattr.py --part trainable --epochs 4 --n 1500 --without content --lr-tower 1e-3 \
	  --affinity 1 --affinity-on features
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/ray.py
	$(PY) benchmarks/ray.py --memory
	$(PY) benchmarks/cull.py

# Rebuild the default `lite` model from the synthetic world (configs/lite.yaml).
LITE_WORLD := build/lite-world
lite: $(STAMP) sources
	$(VENV)/bin/photocritic data synth --n 3000 --seed 0 --exclude skimage-astronaut,skimage-rocket \
	  --output $(LITE_WORLD) -q
	$(VENV)/bin/photocritic train --config configs/lite.yaml --overwrite -q
	$(PY) benchmarks/lite_pairs.py

# Source photos of the synthetic world (Debian wallpaper packages; needs root).
SOURCE_PACKAGES := lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 plasma-workspace-wallpapers
sources:
	@dpkg -s $(SOURCE_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SOURCE_PACKAGES); }

clean:
	rm -rf $(VENV) results .pytest_cache

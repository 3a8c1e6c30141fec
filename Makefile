# The virtualenv; scripts/setup.sh honours LISA_VENV the same way.
VENV ?= $(or $(LISA_VENV),.venv)

.PHONY: setup test demo

setup:
	LISA_VENV="$(abspath $(VENV))" bash scripts/setup.sh

# The lint (ruff.toml), then the test suite.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q tests

# The demo bag (2 held-out synthetic scenes, commands and ground truth) through the node's
# pipeline with the built-in demo model: output bag, metrics.json, report.html, printed metrics.
# Every command is asked on its own (keep_conversation false): the demo model was trained on
# single commands, not on follow-ups. Each command's target is then tracked on the later images;
# --tracking-baseline also answers it again on each of them, to compare.
DEMO = outputs/demo
demo: setup
	rm -rf $(DEMO)
	$(VENV)/bin/lisa-demo-bag --output $(DEMO)/input
	$(VENV)/bin/lisa-eval-bag $(DEMO)/input/bag --script $(DEMO)/input/script.jsonl --output $(DEMO)/eval \
		--image-topic /camera/color/image_raw --depth-topic /camera/depth/image_raw \
		--camera-info-topic /camera/color/camera_info --pose-topic /camera/pose --target-frame map \
		-p keep_conversation:=false --tracking-baseline

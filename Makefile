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
# --tracking-baseline also answers it again on each of them, to compare. The voice leg then
# speaks the same commands with espeak-ng (two voices in turn), recognises them as speech_node
# does, and evaluates what was heard: word error rate, and gIoU next to the typed commands'.
# Its acoustic model is first adapted to those two voices with the training phrasings
# (lisa-adapt-speech; the bag's commands are held-out phrasings, never in the adaptation data).
DEMO = outputs/demo
DEMO_EVAL = $(VENV)/bin/lisa-eval-bag $(DEMO)/input/bag --script $(DEMO)/input/script.jsonl \
	--image-topic /camera/color/image_raw --depth-topic /camera/depth/image_raw \
	--camera-info-topic /camera/color/camera_info --pose-topic /camera/pose --target-frame map \
	-p keep_conversation:=false
demo: setup
	rm -rf $(DEMO)
	$(VENV)/bin/lisa-demo-bag --output $(DEMO)/input
	$(DEMO_EVAL) --output $(DEMO)/eval --tracking-baseline
	$(VENV)/bin/lisa-adapt-speech --espeak-voices en-us en-us+f3 --output $(DEMO)/speech_model
	$(DEMO_EVAL) --output $(DEMO)/eval_voice --voice en-us en-us+f3 --acoustic-model $(DEMO)/speech_model \
		--typed-metrics $(DEMO)/eval/metrics.json

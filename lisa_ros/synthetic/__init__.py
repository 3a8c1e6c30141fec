"""Synthetic table scenes with known geometry and commands: the demo data.

Modules: raycast (primitives and the ray caster), catalogue (object categories and scene
objects), intents (the commands' rules and explanations, as data), scenes (layouts,
rendering, commands: `make_scene`), demo_bag (a rosbag2 of scenes with a ground-truth script).
"""

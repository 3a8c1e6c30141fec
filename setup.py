"""Packaging for pip: lisa_model, training, and lisa_ros (whose ROS-free rooms run without ROS).

The distribution is deliberately not called `lisa_ros`: that name belongs to the
ROS 2 package, which colcon builds separately (with the generated interfaces).
"""

from setuptools import find_packages, setup

setup(
    name="lisa-ros-model",
    version="0.1.0",
    description="LISA reasoning segmentation (multimodal LLaMA + SAM) for robots, ROS-free model package",
    # lisa_ros: colcon installs the same folder merged with the generated interfaces; from pip,
    # its ROS-free rooms (runtime, geometry, bag, synthetic, cli) work without a ROS install.
    packages=find_packages(include=["lisa_model*", "training*", "lisa_ros*"]),
    # The demo model's weights (a few MB), loaded when no model path is given.
    package_data={
        "lisa_model": ["demo_model/*", "demo_model/vision_tower/*"],
        "lisa_ros": ["bag/templates/*"],
    },
    python_requires=">=3.10",
    install_requires=[
        # torch is installed first, pinned, by scripts/setup.sh (a local CPU wheel);
        # this range is satisfied by it, so pip never pulls a CUDA build here.
        "torch>=2.1",
        "transformers>=5.24,<6",
        "tokenizers",
        "safetensors",
        "segment-anything",
        "numpy",
        "pillow",
        "pyyaml",  # lisa_ros.runtime.launch_config reads ROS 2 parameter files
        "tqdm",
        # Released LISA tokenizers are SentencePiece files (tokenizer.model); transformers
        # converts them with sentencepiece and protobuf.
        "sentencepiece",
        "protobuf",
        # lisa_ros.geometry / lisa_ros.geometry.scannet (3D target regions, used by the node and the
        # evaluators); open3d needs the system library libusb-1.0-0 (scripts/setup.sh).
        "open3d-cpu",
        "opencv-python-headless",
        # lisa_ros.bag (lisa-eval-bag): rosbag2 (sqlite3, mcap) without ROS; report template and plots.
        "rosbags",
        "matplotlib",
        "jinja2",
        # lisa_ros.speech: audio files (libsndfile) and resampling, the microphone (PortAudio: the
        # system library libportaudio2, scripts/setup.sh; imported only when a microphone is opened),
        # voice activity detection, the embedded recogniser (its wheel ships the en-us model).
        "soundfile",
        "soxr",
        "sounddevice",
        "webrtcvad-wheels",
        "pocketsphinx>=5",
        "jiwer",  # word error rates (the demo's voice leg, bench.speech)
        "lemminflect",  # inflected forms of the expected words (the recogniser's vocabulary)
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "ruff==0.17.6"],
        "training": ["peft", "tensorboard", "pycocotools", "deepspeed", "pydantic>=2"],
        # precision="int8"/"int4" in lisa_model.checkpoint.load_lisa (CUDA only)
        "quantization": ["bitsandbytes"],
    },
    entry_points={
        "console_scripts": [
            "lisa-demo = lisa_ros.cli.demo:main",
            "lisa-eval-bag = lisa_ros.cli.eval_bag:main",
            "lisa-demo-bag = lisa_ros.cli.demo_bag:main",
            "lisa-adapt-speech = lisa_ros.cli.adapt_speech:main",
        ],
    },
)

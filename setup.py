"""Packaging for segcam: the import package `segcam` (source folder app/), console script `segcam`.

OpenCV is chosen by the installer, never pulled in by default, because its three builds
cannot share one environment (each wheel installs the same cv2/ folder over the other):

* `segcam[gui]` - opencv-python, with windows (display://): desktops;
* `segcam[headless]` - opencv-python-headless: servers, containers, CI;
* neither - a system OpenCV: JetPack's (or Debian's) python3-opencv, built with GStreamer,
  seen through a venv made with --system-site-packages (docs/jetson.md). pip must not shadow
  it, nor TensorRT; numpy stays below 2 on Linux/aarch64 because JetPack's cv2 was built
  against numpy 1.x.

On Linux/aarch64 the `gui`/`headless` extras install nothing (a Jetson has JetPack's
OpenCV); other ARM boards take the `opencv` extra (opencv-python-headless).
"""

from __future__ import annotations

from setuptools import find_packages, setup

ON_ARM_LINUX = "platform_system == 'Linux' and platform_machine == 'aarch64'"
NOT_ARM_LINUX = "platform_system != 'Linux' or platform_machine != 'aarch64'"

setup(
    name="segcam",
    version="0.1.0",
    description="Person segmentation and background replacement for live video on Jetson",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    author="The segcam developers",
    url="https://github.com/segcam/segcam",
    project_urls={
        "Documentation": "https://github.com/segcam/segcam/tree/main/docs",
        "Source": "https://github.com/segcam/segcam",
        "Issues": "https://github.com/segcam/segcam/issues",
        "Wire protocol": "https://github.com/segcam/segcam/blob/main/docs/protocol.md",
    },
    python_requires=">=3.8",
    # The source folder is app/ (the project's layout); it installs as the import package
    # `segcam`, so nothing claims the common name `app` in a user's site-packages.
    # configs/ and systemd/ live at the top of the repo (the layout users know) and ship
    # inside the package so an installed segcam finds them.
    packages=["segcam"]
    + ["segcam." + p for p in find_packages(where="app")]
    + ["segcam.configs", "segcam.systemd"],
    package_dir={"segcam": "app", "segcam.configs": "configs", "segcam.systemd": "systemd"},
    package_data={
        "segcam.configs": ["*.yaml", "models/*.yaml", "devices/*.yaml"],
        "segcam.systemd": ["*.service", "*.sh", "*.conf"],
        "segcam.gpu": ["kernels/*.cu", "kernels/*.cuh"],
    },
    scripts=["build_engine.sh"],
    install_requires=[
        f"numpy>=1.21; {NOT_ARM_LINUX}",
        f"numpy>=1.21,<2; {ON_ARM_LINUX}",
        "pyzmq>=22",
        "pyyaml>=5.4",
        "onnx>=1.12",
        "onnxruntime>=1.12",
        "tflite>=2.10",
        "flatbuffers>=2.0",
    ],
    extras_require={
        # a real portrait photo for the demo scene ships with scikit-image
        "demo": ["scikit-image>=0.19"],
        # one OpenCV wheel at most (see the module docstring); `opencv` is for ARM boards
        "gui": [f"opencv-python>=4.5; {NOT_ARM_LINUX}"],
        "headless": [f"opencv-python-headless>=4.5; {NOT_ARM_LINUX}"],
        "opencv": ["opencv-python-headless>=4.5"],
        # a system python3-opencv (Debian/Ubuntu on x86) is built against numpy 1.x, like
        # JetPack's: keep pip from upgrading numpy under it (aarch64 pins this already)
        "system-opencv": ["numpy<2"],
        "gpu": ["cuda-python>=11.4"],
        "jetson": ["jetson-stats>=4.2"],
        "plot": ["matplotlib>=3.3"],
        # Crash-safe H.264/VP9/VP8 recording on the CPU. PyAV's wheels bundle FFmpeg with
        # libx264, which is GPL: a build that must avoid it records VP8/VP9 (libvpx, BSD)
        # from a PyAV built against an FFmpeg without x264, or uses the Jetson's hardware
        # encoder through GStreamer (docs/recording.md).
        "record": ["av>=12"],
        "test": [
            "pytest>=7",
            "hypothesis>=6",
            "pycocotools>=2.0.6",
            "scikit-image>=0.19",
            "matplotlib>=3.3",  # `segcam bench --plot` and the GPU timeline plot are tested
            "av>=12",  # the recorder's kill -9 / rotation / budget tests
            # Google's own runtime, for fidelity tests of the tflite->ONNX converter
            "ai-edge-litert>=1.0; python_version >= '3.9' and python_version < '3.13'",
        ],
        # pinned: new rules must not break CI
        "lint": ["ruff==0.17.6", "vermin==1.9.2", "mypy==2.4.1"],
    },
    entry_points={"console_scripts": ["segcam=segcam.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.12",
        "Operating System :: POSIX :: Linux",
    ],
)

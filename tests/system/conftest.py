"""The system tier's fixtures (defined in system_env.py, shared by its test modules)."""

from system_env import system_cv2_build, system_opencv_venv, xserver  # noqa: F401

"""Crash-safe recording of ``file://`` outputs.

::

    FileSink thread ─▶ SegmentRecorder ─▶ a FrameWriter per segment and stream
                        │ rotation, budget,  ├─ gstreamer: nvv4l2h264enc (Jetson)
                        │ keyframe cadence   ├─ pyav: libx264 / libvpx (CPU)
                        ▼                    └─ opencv: cv2.VideoWriter (fallback)
                      Syncer (fsync thread)

* :mod:`segcam.recording.formats` - the codec and container table (one place);
* :mod:`segcam.recording.choice` - which writer records a file here, and why;
* :mod:`segcam.recording.pyav`, :mod:`segcam.recording.gstreamer`,
  :mod:`segcam.recording.opencv` - one module per writer;
* :mod:`segcam.recording.durable` - fsync of files and directories off the writing thread;
* :mod:`segcam.recording.segments` - segment names and the disk budget;
* :mod:`segcam.recording.recorder` - the segmented recorder the file sink drives.
"""

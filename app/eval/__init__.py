"""Cut quality against the truth: metrics, the frames they are measured on, reports.

``segcam eval`` (:mod:`segcam.commands.eval`) drives it: :mod:`.frames` yields frames with
their true silhouettes (the demo scene, or a folder of image + mask pairs), :mod:`.settings`
names the refinement settings compared, :mod:`.run` scores each setting on each frame with
:mod:`.metrics`, and :mod:`.report` writes the table, the plot and the crop sheet.
"""

"""The mask stream over ZeroMQ: wire protocol, publisher sink, subscriber, CURVE keys.

* :mod:`segcam.publish.protocol` - message layout, header schema, payload codecs
  (normative description: ``docs/protocol.md``);
* :mod:`segcam.publish.rle` - COCO compressed RLE in numpy;
* :mod:`segcam.publish.publisher` - the thread owning the PUB socket, ``exposure_warning``;
* :mod:`segcam.publish.sink` - ``MaskPublisherSink``, the pipeline sink;
* :mod:`segcam.publish.subscriber` - ``MaskSubscriber``, the client library;
* :mod:`segcam.publish.curve` - key pairs and the ZAP authenticator;
* :mod:`segcam.publish.monitor` - connection events counted, refusals logged sparingly;
* :mod:`segcam.publish.relay` - the XSUB->XPUB relay behind `segcam relay`.

Import the submodules directly; this package imports nothing heavy by itself.
"""

from __future__ import annotations

"""The mask stream over ZeroMQ: wire protocol, publisher sink, subscriber, CURVE keys.

* :mod:`app.publish.protocol` - message layout, header schema, payload codecs
  (normative description: ``docs/protocol.md``);
* :mod:`app.publish.rle` - COCO compressed RLE in numpy;
* :mod:`app.publish.publisher` - the thread owning the PUB socket, ``exposure_warning``;
* :mod:`app.publish.sink` - ``MaskPublisherSink``, the pipeline sink;
* :mod:`app.publish.subscriber` - ``MaskSubscriber``, the client library;
* :mod:`app.publish.curve` - key pairs and the ZAP authenticator.

Import the submodules directly; this package imports nothing heavy by itself.
"""

from __future__ import annotations

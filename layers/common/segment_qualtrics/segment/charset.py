"""The characters a message may carry: the bottom layer's, so that events (segment/) and the envelope
(destination/) share one definition without the Segment side importing the destination."""

from __future__ import annotations

import re

# The characters SQS refuses in a message body or attribute value. It accepts only #x9 #xA #xD
# #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF, and one refused character fails the whole send.
SQS_REFUSED = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

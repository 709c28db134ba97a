"""``python -m hrmedseg.cli`` (and ``torchrun -m hrmedseg.cli``, for distributed training)."""

import sys

from . import main

sys.exit(main())

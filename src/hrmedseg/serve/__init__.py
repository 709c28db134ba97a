"""``hrmedseg serve``: an interactive page for prompting HRMedSegSAM or viewing HRMedSeg masks."""

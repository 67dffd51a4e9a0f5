"""The report (``eegsine report``) and the README's result blocks (``results``)."""

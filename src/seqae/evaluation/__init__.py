"""What the codes are worth: exporting them, probing them, and one table of a sweep."""

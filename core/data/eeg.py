"""EEG data sets (being written): synthetic-vep, eegcvpr40, uea:<Name>."""

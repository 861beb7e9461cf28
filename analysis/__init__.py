"""Analysis of sweep results. Reads only the Parquet output of a sweep."""

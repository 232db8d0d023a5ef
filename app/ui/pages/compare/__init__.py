"""The Compare page: quant variants side by side, the results table and the quality chart."""

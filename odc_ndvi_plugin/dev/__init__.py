"""Demo and test tooling (``pip install odc-ndvi-plugin[demo]``): an embedded datacube index
(``index``), a synthetic Landsat archive with its truth (``synthetic``), the demo (``demo``)."""

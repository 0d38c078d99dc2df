if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer


@transformer
def summarise(regions, *args, **kwargs):
    return len(regions)

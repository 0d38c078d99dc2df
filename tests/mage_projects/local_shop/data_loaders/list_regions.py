if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader


@data_loader
def list_regions(*args, **kwargs):
    return [[{'region': 'eu'}, {'region': 'us'}]]

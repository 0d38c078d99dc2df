import csv
from os import path

import yaml
from mage_ai.settings.repo import get_repo_path
from local_shop.utils.cleaning import normalise

if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@data_loader
def load_orders(*args, **kwargs):
    with open(path.join(get_repo_path(), 'io_config.yaml')) as f:
        currency = yaml.safe_load(f)['default']['SHOP_CURRENCY']
    # Relative to Mage's working directory: the project's parent.
    with open('local_shop/data/orders.csv') as f:
        rows = list(csv.DictReader(f))
    return [
        {'customer': normalise(r['customer']), 'amount': float(r['amount']), 'currency': currency}
        for r in rows
    ]


@test
def test_output(output, *args) -> None:
    assert output, 'no orders'

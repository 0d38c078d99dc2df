import json
import os

from mage_ai.data_preparation.shared.secrets import get_secret_value

if 'data_exporter' not in globals():
    from mage_ai.data_preparation.decorators import data_exporter


@data_exporter
def export_totals(data, **kwargs):
    totals, count, label = data  # one argument per upstream block: its outputs
    target = kwargs['configuration']['file_path']
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, 'w') as f:
        json.dump({'totals': totals, 'count': count, 'label': label}, f)
    print('EXPORTED', os.path.abspath(target), 'repo', kwargs['repo_path'],
          'key', len(get_secret_value('shop_api_key')))

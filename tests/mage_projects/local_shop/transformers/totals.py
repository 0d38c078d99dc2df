if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@transformer
def totals(orders, *args, **kwargs):
    by_customer = {}
    for order in orders:
        by_customer[order['customer']] = by_customer.get(order['customer'], 0) + order['amount']
    # Mage splits a returned list into outputs: totals, count, label.
    return [by_customer, len(by_customer), kwargs['label']]


@test
def test_outputs(*args) -> None:
    assert args[2] == 'weekly', args
    assert args[1] == len(args[0])

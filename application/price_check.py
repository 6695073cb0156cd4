"""Every deployment is priced at start-up, or it is not served.

An unpriced deployment is named in a warning and taken out of its model group, so that the
priced deployments beside it (and the group's fallbacks) still serve; a group left with none
is not served. Under `general_settings.strict_pricing: true` start-up stops instead. A pattern
entry (`openai/*`) has no price of its own: each model it serves is priced when it is called.
"""
from __future__ import annotations

from dataclasses import replace

from moneta.application.config import Deployment, GatewayConfig
from moneta.application.ports import PriceBook
from moneta.domain.errors import GatewayError

_HOW_TO_PRICE = ("set input_cost_per_token and output_cost_per_token in litellm_params, or model_info.base_model"
                 " (the priced model it runs), or model_info.allow_zero_cost: true")


class UnpricedDeploymentsError(ValueError):
    """`strict_pricing` is on and some deployment has no price; the message names them."""


def priced_only(config: GatewayConfig, prices: PriceBook) -> GatewayConfig:
    """The config with its unpriced deployments taken out, and a notice that names them."""
    unpriced = [d for d in config.deployments if not d.is_pattern and not is_priced(d, prices)]
    if not unpriced:
        return config
    names = ", ".join(f"{d.model_name} ({d.label})" for d in unpriced)
    if config.general_settings.get("strict_pricing"):
        raise UnpricedDeploymentsError(
            f"general_settings.strict_pricing: no price is known for {names}: {_HOW_TO_PRICE}")
    kept = tuple(d for d in config.deployments if d.is_pattern or is_priced(d, prices))
    gone = sorted(set(config.model_names()) - {d.model_name for d in kept})
    notice = f"no price is known for {names}: not served ({_HOW_TO_PRICE})"
    if gone:
        notice += f"; model groups left with no deployment, not served: {', '.join(gone)}"
    return replace(config, deployments=kept, notices=(*config.notices, notice))


def is_priced(deployment: Deployment, prices: PriceBook) -> bool:
    try:
        prices.check_priced(deployment)
    except GatewayError:
        return False
    return True

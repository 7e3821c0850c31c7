from typing import Any

import pytest

from tests.template.cfn import load_template


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """template.yaml, parsed once, short-form tags turned into CloudFormation's long form."""
    return load_template()

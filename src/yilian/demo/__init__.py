"""The demo region: a deterministic, realistic medical consortium (医联体) of a Chinese city.

``build_demo_region()`` returns plain FHIR R4 resources for 湖州市 (Huzhou, Zhejiang): the
health commission, a tertiary hospital, two county-level hospitals, community and township
health centres and village clinics, their staff, a few hundred residents with Chinese names
and valid ID numbers, their visits, diagnoses, measurements and children's vaccinations, and
a handful of duplicate registrations for the patient index to find, and each insured
resident's ``Coverage`` with the city's medical security bureau (``coverage``). ``DemoRegion.bundles()``
cuts them into transaction bundles that ``yilian demo`` posts; loading them twice creates
nothing new. Every resource carries the ``HTEST`` (test data) security label.

``card_payments`` then uses the cards the card system issued, through the payments use cases
(top-ups, charges, refunds, deposits): ``yilian demo`` runs it on the demo's own day.
"""

from yilian.demo.duplicates import KnownDuplicate
from yilian.demo.region import DEMO_AS_OF, DemoRegion, build_demo_region

__all__ = ["DEMO_AS_OF", "DemoRegion", "KnownDuplicate", "build_demo_region"]

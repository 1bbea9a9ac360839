"""FHIRPath (N1, as FHIR R4 uses it, plus the 2.0 functions the official tests exercise).

Expressions are parsed once and compiled into nested closures, so evaluating one again
is only the work the data asks for: search-parameter extraction runs on every write.

    >>> path = compile_path("Observation.value as Quantity")
    >>> path.evaluate(observation)          # [{'value': 185, 'unit': 'lbs', ...}]
    >>> path.evaluate_typed(observation)    # [TypedValue(value={...}, type='Quantity')]

Values returned by :meth:`CompiledPath.evaluate`:

* data from the resource comes back as it is in the JSON — the same objects, not
  copies, so do not change them: dicts for complex elements and resources, and
  primitives as stored (``str`` for dates, times, codes…; ``bool``; ``int``; ``float``,
  ``int`` or ``Decimal`` for decimals, as the JSON was parsed). A primitive that has only
  extensions (``_birthDate`` without ``birthDate``) gives ``None``.
* values the expression computes are ``bool``, ``int``, ``Decimal`` (never float, so
  ``1.10`` keeps its precision), ``str``; Date/DateTime/Time as ISO 8601 text with the
  precision they have (``"2015-02"``, ``"2015-02-04T14:34:28+10:00"``, ``"14:34:28"``);
  Quantity as a FHIR Quantity dict ``{"value": Decimal, "unit", "system", "code"}``.

:meth:`CompiledPath.evaluate_typed` adds each result's type (:class:`TypedValue`); use
it when the FHIR type matters, e.g. to know that ``Condition.onset`` gave a ``Period``.

``compile_path(expression, strict=True)`` also rejects element names the model does
not define for the resource evaluated (for expressions people write: invariants,
``_filter``). ``evaluate_nodes()`` returns the internal :class:`Node` items, which know
their parent, JSON key and index (FHIRPath Patch writes through them).
Functions listed in :data:`UNSUPPORTED_FUNCTIONS` raise ``FHIRPathError`` at compile time.

``direct_path(expression, root_type)`` gives a :class:`DirectPath` for plain navigation
(``Patient.name``, ``(Observation.value as Quantity)``, ``telecom.where(system='phone')``,
``subject.where(resolve() is Patient)`` and unions of them): the same results as
``evaluate_typed`` without a resolver, walked straight over the JSON, or ``None`` from its
``evaluate_typed`` where only the engine can tell (the search indexer then asks the engine).

``resolve()`` uses the ``resolver`` callback (reference text -> resource dict or None),
after looking in ``contained`` and the enclosing Bundle; when none of them has the
resource it returns a stub ``{"resourceType": T, "id": id}`` read from the reference, so
``subject.where(resolve() is Patient)`` works without fetching anything.
"""

from yilian.fhir.fhirpath.compiled import CompiledPath, TypedValue, compile_path, evaluate
from yilian.fhir.fhirpath.direct import DirectPath, direct_path
from yilian.fhir.fhirpath.errors import FHIRPathError
from yilian.fhir.fhirpath.functions import UNSUPPORTED as UNSUPPORTED_FUNCTIONS
from yilian.fhir.fhirpath.nodes import Node

__all__ = [
    "UNSUPPORTED_FUNCTIONS",
    "CompiledPath",
    "DirectPath",
    "FHIRPathError",
    "Node",
    "TypedValue",
    "compile_path",
    "direct_path",
    "evaluate",
]

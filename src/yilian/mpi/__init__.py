"""Master patient index (MPI): every resident once, across every member institution.

``yilian.mpi.matching`` is the matching engine (normalisation, Fellegi–Sunter scoring,
the real-time index, bulk de-duplication); it works on plain records and knows nothing
of FHIR or storage, so the services that wire it to the store live beside it.
"""

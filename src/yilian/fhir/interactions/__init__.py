"""The FHIR RESTful interactions, one module each: read, create, update, patch, delete, history,
search, batch/transaction, $everything, $validate and the capability statement."""

"""earmark services: transactions, role checks and business rules over the store and blobs."""

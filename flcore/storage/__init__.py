"""Storage: MongoDB collections and GridFS blobs behind one store."""

// The store the front Worker runs the component on before any object is
// chosen. It holds nothing: the component answers a request that never
// reaches storage (a malformed login body, a missing or doubled X-User-Id)
// by itself, and for a well-formed login its first storage call names the
// identifier the body gives (`find-user-for-login`), which is recorded and
// refused. So the front learns whose object a login goes to from the
// component's own reading of the body, with no second parser of it here.

/** Thrown at every storage call; the component answers it as a storage failure, which the front discards. */
class NotHere extends Error {}

/** A store that answers nothing; `identifier` holds what a login named ({tag, value}), if it got that far. */
export function frontStore() {
  const refuse = () => {
    throw new NotHere('the front Worker holds no state');
  };
  const store = {
    identifier: null,
    transaction: refuse,
    user: refuse,
    save: refuse,
    count: refuse,
    setCount: refuse,
    deleteCount: refuse,
    userForLogin(tag, value) {
      store.identifier = { tag, value };
      refuse();
    },
  };
  return store;
}

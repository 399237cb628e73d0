# Install rules and the Debian packages (CPack DEB, one package per component):
#   keybridged, keybridge-ca, keybridge-cache, keybridge-sync, keybridge (the CLI).
# Built by scripts/package-deb.sh, which generates the man pages first (scripts/gen-man.py into
# ${CMAKE_BINARY_DIR}/man/<package>/); docs/packaging.md describes the layout.

# Installing (and so CPack) needs only the programs, which package-deb.sh builds: not every test
# and fuzz target of "all" (the package test runs while other tests use the build tree).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

file(STRINGS ${CMAKE_SOURCE_DIR}/src/lib/version.h kb_version_line REGEX "#define KB_VERSION ")
string(REGEX REPLACE ".*\"([^\"]+)\".*" "\\1" KB_VERSION "${kb_version_line}")

set(KB_PKG_DIR ${CMAKE_SOURCE_DIR}/packaging)
set(KB_MAN_DIR ${CMAKE_BINARY_DIR}/man)

# package -> program directory (bin or sbin), service user, state directory, uses a PKCS#11 token
set(kb_packages keybridged keybridge-ca keybridge-cache keybridge-sync keybridge)
set(kb_keybridged "sbin;keybridge;/var/lib/keybridge;yes")
set(kb_keybridge-ca "sbin;keybridge-ca;/var/lib/keybridge-ca;yes")
set(kb_keybridge-cache "sbin;keybridge-cache;/var/lib/keybridge-cache;no")
set(kb_keybridge-sync "bin;keybridge-sync;/var/lib/keybridge-sync;no")
set(kb_keybridge "bin;;;no")

foreach(pkg IN LISTS kb_packages)
  if(NOT TARGET ${pkg})
    continue()
  endif()
  list(GET kb_${pkg} 0 bindir)
  list(GET kb_${pkg} 1 KB_USER)
  list(GET kb_${pkg} 2 KB_STATE)
  list(GET kb_${pkg} 3 KB_HSM)
  set(KB_PKG ${pkg})
  install(TARGETS ${pkg} RUNTIME DESTINATION ${bindir} COMPONENT ${pkg})
  install(FILES ${KB_PKG_DIR}/etc/${pkg}.conf DESTINATION /etc/keybridge
          PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ COMPONENT ${pkg})
  # The man pages exist after scripts/gen-man.py ran (scripts/package-deb.sh runs it); the
  # package test checks every package carries its pages.
  install(DIRECTORY ${KB_MAN_DIR}/${pkg}/ DESTINATION share/man COMPONENT ${pkg} OPTIONAL)
  install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION share/doc/${pkg} COMPONENT ${pkg})
  string(TOUPPER ${pkg} PKG)
  set(CPACK_DEBIAN_${PKG}_PACKAGE_NAME ${pkg})
  set(CPACK_DEBIAN_${PKG}_FILE_NAME DEB-DEFAULT)
  set(CPACK_DEBIAN_${PKG}_PACKAGE_SECTION admin)
  set(ctl ${CMAKE_BINARY_DIR}/packaging/${pkg})
  file(MAKE_DIRECTORY ${ctl})
  file(WRITE ${ctl}/conffiles "/etc/keybridge/${pkg}.conf\n")
  set(extra ${ctl}/conffiles)
  if(KB_USER)
    install(FILES ${KB_PKG_DIR}/systemd/${pkg}.service DESTINATION /lib/systemd/system
            PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ COMPONENT ${pkg})
    foreach(script postinst prerm postrm)
      configure_file(${KB_PKG_DIR}/deb/${script}.in ${ctl}/${script} @ONLY
                     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                                      GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
      list(APPEND extra ${ctl}/${script})
    endforeach()
    set(CPACK_DEBIAN_${PKG}_PACKAGE_DEPENDS "adduser")
  endif()
  set(CPACK_DEBIAN_${PKG}_PACKAGE_CONTROL_EXTRA "${extra}")
endforeach()
set(CPACK_COMPONENT_KEYBRIDGED_DESCRIPTION
    "keybridge secrets server\nServes secrets to SPIFFE workloads over mTLS, keys in a PKCS#11 token.")
set(CPACK_COMPONENT_KEYBRIDGE-CA_DESCRIPTION
    "keybridge SPIFFE CA\nIssues X509-SVIDs ahead of time and keeps them fresh in their targets.")
set(CPACK_COMPONENT_KEYBRIDGE-CACHE_DESCRIPTION
    "keybridge AWS Secrets Manager-compatible cache\nJSON 1.1 + SigV4 API over a local encrypted store.")
set(CPACK_COMPONENT_KEYBRIDGE-SYNC_DESCRIPTION
    "keybridge per-application syncer\nCopies an application's secrets from keybridged to Secrets Manager or a directory.")
set(CPACK_COMPONENT_KEYBRIDGE_DESCRIPTION
    "keybridge admin CLI\nManages secrets, groups, clients and grants of keybridged; reads the audit.")
# gpg and gpg-agent: `secret generate --type openpgp` (everything else works without them)
set(CPACK_DEBIAN_KEYBRIDGED_PACKAGE_RECOMMENDS "softhsm2 | p11-kit-modules, gpg, gpg-agent")
set(CPACK_DEBIAN_KEYBRIDGE-CA_PACKAGE_RECOMMENDS "softhsm2 | p11-kit-modules")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME keybridge)
set(CPACK_PACKAGE_VENDOR keybridge)
set(CPACK_PACKAGE_VERSION ${KB_VERSION})
set(CPACK_PACKAGE_CONTACT "keybridge maintainers <keybridge@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL ${kb_packages})
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_STRIP_FILES ON)
include(CPack)
